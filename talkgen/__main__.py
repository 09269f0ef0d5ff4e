from talkgen.cli import main

main()
