"""pandas decides how to print from __main__ (no __file__ means an
interactive session, which changes the repr width): a typical frame printed
by a script."""
import atexit

import numpy as np
import pandas as pd
from pandas.io.formats import console

rng = np.random.default_rng(0)
df = pd.DataFrame(rng.normal(size=(40, 30)).round(3),
                  columns=[f"column_{i}" for i in range(30)])
df["label"] = ["x" * (i % 7) for i in range(40)]
print("interactive:", console.in_interactive_session())
print(df)
print(df.describe().T.head(8))
print(df.groupby(df["label"].str.len()).mean(numeric_only=True).iloc[:, :4])
atexit.register(lambda: print("interactive at exit:",
                              console.in_interactive_session()))
