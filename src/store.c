/* store.c: the on-disk store (STUB). */
#include "store.h"
