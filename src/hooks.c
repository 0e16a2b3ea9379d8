/* hooks.c: when an automatic snapshot is due (STUB). */
#include "chkpt.h"

int
chkpt_hooks_install(CheckpointObject *ck)
{
    return 0;
}

void
chkpt_hooks_uninstall(CheckpointObject *ck)
{
}

int
chkpt_hooks_reconfigure(CheckpointObject *ck)
{
    return 0;
}
