print("badinit/__init__ runs once")
raise ValueError("the package cannot be imported")
