from medst.cli.app import main

main()
