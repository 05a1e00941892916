from searchplay.cli import main

main()
