#!/bin/bash
# ckptctl pull --push (ckptctl/push.c): QEMU writes the files ckptctl
# created and passed to the agent as descriptors.  The same chain, checks
# and restores as test-pull-chain.sh, which takes ckptctl's default (NBD).
CHAIN_MODE=push exec "$(dirname "$0")/test-pull-chain.sh" "$@"
