"""The script's own audit hook sees only what the script does: chkpt's
snapshots (taken meanwhile in the snapshot modes) raise no audit event."""
import sys
import time

events = []
sys.addaudithook(lambda event, args: events.append(event))

data = [0.5] * 200_000
table = dict.fromkeys(range(20_000), "x")
end = time.monotonic() + 0.3
n = 0
while time.monotonic() < end:
    n += 1
    data[n % 1000] = n
with open(__file__, "rb") as f:
    head = f.read(3)
print(head, sorted(set(events)))
