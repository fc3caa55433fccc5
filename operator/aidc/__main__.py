import sys

from aidc.cli import main

sys.exit(main())
