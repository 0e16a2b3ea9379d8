"""Pickles and copies the script's objects from another module."""
import copy
import pickle


def roundtrip(obj):
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    back = pickle.loads(data)
    return back, copy.deepcopy(obj), copy.copy(obj)


def by_name():
    from __main__ import Point, Color, square
    return Point(1, 2), Color.RED, square(4)
