class MyInterrupt(KeyboardInterrupt):
    pass


raise MyInterrupt()
