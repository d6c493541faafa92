from scalemon.cli import main

main()
