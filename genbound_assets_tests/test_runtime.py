"""The process-wide allocator setting (genbound_assets/runtime.py), in fresh processes."""

import os
import subprocess
import sys


def _run(code: str, **env) -> str:
    e = {**os.environ, **env}
    return subprocess.run([sys.executable, "-c", code], env=e, capture_output=True, text=True,
                          check=True).stdout.strip()


def test_allocator_tuning_is_set_once_and_can_be_turned_off():
    """In a fresh process: set on glibc, and then a repeated demo-size forward pass (d 64, 2
    layers, 32 windows of 128) reuses freed blocks instead of faulting their pages in again;
    with GENBOUND_MALLOC_TUNING=0, a no-op, and the same passes fault thousands of pages (over
    10x as many; measured 0-520 against 14,000-17,000)."""
    code = ("import resource, torch\n"
            "from transformers import GPTNeoXConfig, GPTNeoXForCausalLM\n"
            "from genbound_assets.runtime import tune_allocator\n"
            "ok = tune_allocator()\n"
            "assert tune_allocator() is ok\n"
            "torch.set_num_threads(1)\n"
            "m = GPTNeoXForCausalLM(GPTNeoXConfig(vocab_size=257, hidden_size=64, num_hidden_layers=2,\n"
            "    num_attention_heads=4, intermediate_size=256, max_position_embeddings=128)).eval()\n"
            "ids = torch.randint(0, 257, (32, 128))\n"
            "def faults():\n"
            "    r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
            "    with torch.inference_mode():\n"
            "        for _ in range(3):\n"
            "            m(input_ids=ids).logits\n"
            "    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0\n"
            "faults()\n"
            "print(ok, faults())\n")
    on, on_faults = _run(code).split()
    off, off_faults = _run(code, GENBOUND_MALLOC_TUNING="0").split()
    assert (on, off) == ("True", "False")
    assert 10 * int(on_faults) < int(off_faults) and int(off_faults) > 2000, (on_faults, off_faults)
