from rsbench.cli import main

main()
