#!/bin/sh
! ./calc.sh div 1 1 2>/dev/null
