from __future__ import annotations

import sys


def f(x: UndefinedName, y: list[int]) -> Missing:
    return x


class C:
    attr: NotDefinedEither


print(f.__annotations__)
print(C.__annotations__)
print("flag:", hex(sys._getframe().f_code.co_flags & 0x1000000))
print(compile("def g(a: int): pass", "<s>", "exec").co_consts[0].co_flags & 0x1000000)
