"""Pure-Python work for a fixed amount of computation (~0.3 s), long enough
for `-f 1` to snapshot many times; prints a deterministic result."""
import hashlib

data = {"rows": [list(range(50)) for _ in range(50)], "total": 0}
h = hashlib.sha256()
for round_ in range(3000):
    for row in data["rows"]:
        data["total"] += sum(x * round_ for x in row)
    h.update(str(data["total"]).encode())
print(data["total"], h.hexdigest()[:16])
