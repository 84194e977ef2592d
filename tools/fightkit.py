"""The fight's two sides, run as `python -c` in the guard namespace (test_fights, bench_fight)."""

# A sampler: the fraction of reads where the whole policy of filter/EFA_INPUT is there
# (rule 1 present, our jump first in INPUT); with a third argument "count", and the reads.
SAMPLER = """
import subprocess, sys, time
ipt, seconds = sys.argv[1], float(sys.argv[2])
ok = total = 0
end = time.monotonic() + seconds
while time.monotonic() < end:
    hook = subprocess.run([ipt, "-w", "-S", "INPUT"], capture_output=True, text=True).stdout
    chain = subprocess.run([ipt, "-w", "-S", "EFA_INPUT"], capture_output=True, text=True).stdout
    lines = hook.splitlines()
    total += 1
    ok += len(lines) > 1 and lines[1] == "-A INPUT -j EFA_INPUT" and "1024:6513" in chain
    time.sleep(0.01)
print(ok / total, *([total] if sys.argv[3:] == ["count"] else []))
"""
# A writer deleting rule 1 of EFA_INPUT every `every` seconds for `seconds`.
WRITER = """
import subprocess, sys, time
ipt, every, seconds = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
end = time.monotonic() + seconds
while time.monotonic() < end:
    subprocess.run([ipt, "-w", "-D", "EFA_INPUT", "1"], capture_output=True)
    time.sleep(every)
"""
