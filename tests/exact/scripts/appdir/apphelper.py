import __main__


def where():
    return __name__, __main__.__name__, __main__.__spec__.name
