"""`python -m target_tiktok_audiences.cli`: the `tiktok-audiences` console script."""

import sys

from target_tiktok_audiences.cli import main

sys.exit(main())
