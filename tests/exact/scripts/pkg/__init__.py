VALUE = "pkg value"
print("pkg/__init__ runs, __name__ =", __name__)
