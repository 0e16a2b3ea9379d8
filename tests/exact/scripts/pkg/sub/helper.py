def greet(who):
    return f"hello {who} from {__name__}"
