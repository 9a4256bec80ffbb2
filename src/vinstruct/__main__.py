from vinstruct.cli import main

raise SystemExit(main())
