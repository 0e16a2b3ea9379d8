"""A script checking its own docstrings.

>>> add(1, 2)
3
>>> add("a", "b")
'ab'
"""
import doctest


def add(a, b):
    """Add.

    >>> add(2, 2)
    4
    >>> add(2, 3)   # a failing example
    6
    >>> [x for x in range(3)]
    [0, 1, 2]
    >>> undefined_name
    0
    """
    return a + b


class Thing:
    """
    >>> Thing().value
    42
    """
    value = 42


results = doctest.testmod()
print(results)
results = doctest.testmod(verbose=True, report=True)
print(results)
