import sys
import apphelper
args = list(sys.argv)     # data: the snapshot modes have something to save
print("appdir main:", __name__, __file__, __package__ == "", __spec__.name)
print("argv:", sys.argv)
print("path0:", sys.path[0])
print("names:", list(globals()))
print("helper:", apphelper.where())
raise SystemExit(sys.argv[1] if len(sys.argv) > 1 else 0)
