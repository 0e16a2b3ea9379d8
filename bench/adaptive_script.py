"""The workload of bench_adaptive.py: MIB MiB of numpy state (1 MiB arrays
of random floats, no two alike) and PASSES passes over it, then the
script's own CPU time as JSON on the last line.

    python adaptive_script.py MIB PASSES rewrite   every array rewritten
                                                   each pass, as fast as it
                                                   goes
    python adaptive_script.py MIB PASSES little    one array's first bytes
                                                   changed every 20 passes,
                                                   a 0.1 s pause each pass
"""
import json
import resource
import sys
import time

import numpy as np

mib, passes, mode = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
rng = np.random.default_rng(0)
state = [rng.random(1 << 17) for _ in range(mib)]
t0 = time.monotonic()
for i in range(passes):
    if mode == "rewrite":
        for a in state:
            a += 1.0
    else:
        if i % 20 == 0:
            state[i % mib][:16] = i
        time.sleep(0.1)
ru = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"self_cpu": ru.ru_utime + ru.ru_stime,
                  "loop": time.monotonic() - t0}))
