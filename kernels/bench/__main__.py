"""``python -m kernels.bench``: see ``kernels.bench``."""

import os
import sys

# Triton 3.9 warns unless this is set; "1" is its current default (fused multiply-add on)
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")

from kernels.bench import main  # noqa: E402

sys.exit(main())
