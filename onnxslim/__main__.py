import sys

from onnxslim.cli import main

sys.exit(main())
