import sys

from lepton_nn.cli import main

sys.exit(main())
