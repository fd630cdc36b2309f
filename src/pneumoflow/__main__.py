import sys

from pneumoflow.cli import main

sys.exit(main())
