"""The inbox: what is waiting, whether it is finished being written, the watchdog adapter.
Nothing here changes a file (only emptied folders are pruned); nothing is durable: a
restart's scan finds every waiting file again.
"""
