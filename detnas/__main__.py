from detnas.cli import main

raise SystemExit(main())
