import sys

from stream_guard.cli import main

sys.exit(main())
