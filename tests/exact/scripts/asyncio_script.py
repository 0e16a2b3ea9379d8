import asyncio


async def child(n):
    await asyncio.sleep(0)
    if n == 2:
        raise KeyError(n)
    return n


async def main():
    results = await asyncio.gather(*(child(i) for i in range(2)))
    print("gathered", results)
    print("task name", asyncio.current_task().get_name())
    await child(2)


asyncio.run(main())
