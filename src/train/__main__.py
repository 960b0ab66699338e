"""`python -m train`: run the Hydra-composed experiment runner (see train.app.main)."""

from train.app.main import main

if __name__ == "__main__":
    main()
