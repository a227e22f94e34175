"""Entry point of ``python -m hybridnets_ros.demo``."""
import sys

from hybridnets_ros.demo.cli import main

sys.exit(main())
