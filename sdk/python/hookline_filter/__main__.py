from hookline_filter.build import main

main()
