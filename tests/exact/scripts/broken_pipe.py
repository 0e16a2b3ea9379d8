import sys
for i in range(100000):
    print("line", i)
