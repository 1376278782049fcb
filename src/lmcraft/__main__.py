from lmcraft.cli import main

raise SystemExit(main())
