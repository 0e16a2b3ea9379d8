import os
import sys
seen = list(sys.argv)     # data: the snapshot modes have something to save
print("argv:", sys.argv)
print("path0:", sys.path[0])
print("file:", __file__)
print("cwd:", os.getcwd())
print("realpath dir == path0:", os.path.dirname(os.path.realpath(__file__)) == sys.path[0])
import helper_main
helper_main.report()
