import sys

from onnxslim.launch import main

sys.exit(main())
