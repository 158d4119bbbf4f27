"""The one config composer for every command, the checks of a composed config, and the trust check of a stored one."""
