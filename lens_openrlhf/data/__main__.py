import sys

from lens_openrlhf.data.cli import main

sys.exit(main())
