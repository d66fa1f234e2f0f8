import sys

from lens_openrlhf.demo.cli import main

sys.exit(main())
