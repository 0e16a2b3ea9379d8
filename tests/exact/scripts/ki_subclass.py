class MyInterrupt(KeyboardInterrupt):
    pass


raised = ["MyInterrupt"]     # data: the snapshot modes save it


raise MyInterrupt()
