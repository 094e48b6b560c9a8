from synthface.cli.main import main

main()
