import sys

from lens_openrlhf.evaluation.sampling import main

sys.exit(main())
