"""`python -m xcca` is the `xcca` command."""
from xcca.cli import main

raise SystemExit(main())
