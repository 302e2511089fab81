"""The inbox: what is waiting, whether it is finished being written, the watchdog adapter."""
