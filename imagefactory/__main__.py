from imagefactory.cli import main

raise SystemExit(main())
