print("nomain_pkg/__init__ runs")
