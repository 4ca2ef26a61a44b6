from bmbench.cli import main

main()
