"""genbound: provable token-level generalization bounds for LLM checkpoint families."""

import logging as _logging

# GPTQModel imports torchao, whose wheel ships CUDA/cp310 kernels that cannot load on a CPU
# Python 3.11 install; it logs one warning per file and registers enums that torch's pytree
# warns about.  Both are harmless for genbound (it only dequantizes): keep them off the terminal.
_logging.getLogger("torchao").setLevel(_logging.ERROR)
_logging.getLogger("torch.utils._pytree").setLevel(_logging.ERROR)
