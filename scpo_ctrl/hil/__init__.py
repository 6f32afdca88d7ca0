"""Hardware-in-the-loop: the generated C on a target (host SIL, QEMU Cortex-M4F, a board on a serial port)
against the plant simulated in float64 (``scpo-ctrl hil``). See hil/protocol.md for the link."""
