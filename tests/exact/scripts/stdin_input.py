import sys
name = input("name? ")
print("hello", name)
age = input()
print("age", int(age) + 1)
rest = sys.stdin.read()
print("rest:", repr(rest))
print("isatty:", sys.stdin.isatty())
try:
    input("more? ")
except EOFError as e:
    print("EOFError", repr(e))
